//! A bounded argon2 pool for backends and Syncline: password hashes are made and checked on a
//! few dedicated threads, each reusing one argon2 memory buffer, behind an admission limit.
//!
//! Why not `spawn_blocking` per check: an argon2 verification with the default parameters
//! (`m = 19456` KiB) allocates 19 MiB. On whatever blocking thread runs it, glibc's dynamic
//! mmap threshold rises to that size after the first free, so later buffers come from that
//! thread's malloc arena, which keeps the freed memory; a storm of logins spreads over up to
//! 512 blocking threads, each keeping its own 19 MiB (issue 13: 11 MiB → 2.6 GiB after three
//! bursts of 48 wrong passwords). Here the work runs on [`PoolConfig::threads`] threads that
//! each allocate their buffer once and keep it, so memory stays at `threads × m_cost` however
//! many logins arrive, and the rest wait in a bounded queue for a bounded time.
//!
//! - [`PasswordPool`]: `verify` a password against a PHC string (or a decoy for an unknown
//!   user, so that unknown and known names cost the same) and `hash` new passwords.
//! - [`Admission`]: the limit in front of the pool: at most `running` jobs at once, at most
//!   `queue` more waiting, each waiting at most `max_wait`; anything beyond is refused with
//!   [`PasswordError::QueueFull`] or [`PasswordError::WaitedTooLong`] (to be answered as
//!   RESOURCE_EXHAUSTED). Usable alone to cap other credential checks (Syncline caps the
//!   Authenticate calls it forwards to a login channel with one).
//! - [`hash_password_here`]: one hash on the calling thread, for command-line tools.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// argon2's cost parameters (memory, passes, lanes), re-exported so that users of the pool
/// need no direct argon2 dependency.
pub use argon2::Params;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Version};
use rand::RngCore as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// At most this many threads by default, whatever the core count: each keeps an argon2
/// buffer (19 MiB with the default parameters) for good.
pub const MAX_DEFAULT_THREADS: usize = 8;
/// Jobs that may wait for a thread by default: at ~20-50 ms per check on one core, a queue
/// this long drains in about a second on two cores, well within [`DEFAULT_MAX_WAIT`].
pub const DEFAULT_QUEUE: usize = 64;
/// Longest a job waits for a thread by default before it is refused: a login that waits
/// longer is better told to retry than left hanging.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);
/// Most memory a hash may ask for (64 MiB, three times the default): a stored hash with
/// more is refused rather than allocated, so a bad or hostile hash cannot make a thread
/// hold gigabytes.
pub const DEFAULT_MAX_MEMORY_KIB: u32 = 64 * 1024;
/// Most argon2 passes a hash may ask for (the default is 2, OWASP's variants go up to 5): bounds
/// the CPU time of one check.
pub const DEFAULT_MAX_ITERATIONS: u32 = 16;
/// Random salt bytes of a new hash (the PHC recommendation).
const SALT_BYTES: usize = Salt::RECOMMENDED_LENGTH;
/// The salt of the decoy hash checked for unknown users (any fixed value does).
const DECOY_SALT: &str = "c3luY2xpbmUtZGVjb3k";

/// Why a password could not be hashed or checked. A wrong password is not an error:
/// [`PasswordPool::verify`] returns `Ok(false)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// `queued` checks are already waiting: refused without waiting (RESOURCE_EXHAUSTED).
    #[error("too many password checks are waiting ({queued}); retry in a few seconds")]
    QueueFull { queued: usize },
    /// No thread became free within the wait limit (RESOURCE_EXHAUSTED).
    #[error("no password check could start within {waited:?}; retry in a few seconds")]
    WaitedTooLong { waited: Duration },
    /// The stored hash is not a PHC string this pool can check (not argon2, bad encoding,
    /// no salt or output).
    #[error("the stored password hash cannot be read: {0}")]
    UnreadableHash(String),
    /// The hash asks for more memory or passes than the pool allows.
    #[error(
        "the password hash asks for {memory_kib} KiB and {iterations} passes; at most {max_memory_kib} KiB and {max_iterations} passes are allowed"
    )]
    TooCostly { memory_kib: u32, iterations: u32, max_memory_kib: u32, max_iterations: u32 },
    /// argon2 refused its inputs (e.g. hashing parameters out of range).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The pool's threads are gone (it is shutting down, or a thread could not start).
    #[error("the password pool has stopped")]
    Stopped,
}

impl PasswordError {
    /// Returns true when the pool was too busy: retrying later may succeed, and the caller
    /// should answer RESOURCE_EXHAUSTED.
    pub fn is_busy(&self) -> bool {
        match self {
            PasswordError::QueueFull { .. } | PasswordError::WaitedTooLong { .. } => true,
            PasswordError::UnreadableHash(_)
            | PasswordError::TooCostly { .. }
            | PasswordError::Hashing(_)
            | PasswordError::Stopped => false,
        }
    }
}

/// Returns the default thread count: one per core this process may use, at most
/// [`MAX_DEFAULT_THREADS`].
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get()).min(MAX_DEFAULT_THREADS)
}

/// How a [`PasswordPool`] is sized and what it accepts.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Hashing threads, each with its own reusable buffer; also the most checks at once.
    pub threads: usize,
    /// Checks that may wait for a thread; more are refused at once.
    pub queue: usize,
    /// Longest a check waits for a thread.
    pub max_wait: Duration,
    /// Parameters of new hashes (and of the decoy checked for unknown users).
    pub params: Params,
    /// Most memory (KiB) a hash may ask for.
    pub max_memory_kib: u32,
    /// Most passes a hash may ask for.
    pub max_iterations: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            queue: DEFAULT_QUEUE,
            max_wait: DEFAULT_MAX_WAIT,
            params: Params::DEFAULT,
            max_memory_kib: DEFAULT_MAX_MEMORY_KIB,
            max_iterations: DEFAULT_MAX_ITERATIONS,
        }
    }
}

/// Admits at most `running` jobs at once and lets at most `queue` more wait, each for at most
/// `max_wait`, in arrival order; refuses the rest.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    running: usize,
    waiting: AtomicUsize,
    queue: usize,
    max_wait: Duration,
}

/// A place among the running jobs of an [`Admission`]; freed when dropped.
#[derive(Debug)]
pub struct Admitted(OwnedSemaphorePermit);

/// Takes a place in the waiting count for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Returns a limit of `running` jobs at once (at least 1), `queue` waiting, `max_wait` each.
    pub fn new(running: usize, queue: usize, max_wait: Duration) -> Self {
        let running = running.max(1);
        Self { permits: Arc::new(Semaphore::new(running)), running, waiting: AtomicUsize::new(0), queue, max_wait }
    }

    /// Waits for a place among the running jobs, or refuses when `queue` jobs already wait
    /// or none frees up within `max_wait`. Dropping the future leaves the queue.
    pub async fn admit(&self) -> Result<Admitted, PasswordError> {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Ok(Admitted(permit));
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.queue {
            return Err(PasswordError::QueueFull { queued });
        }
        match tokio::time::timeout(self.max_wait, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Admitted(permit)),
            Ok(Err(_closed)) => Err(PasswordError::Stopped),
            Err(_elapsed) => Err(PasswordError::WaitedTooLong { waited: self.max_wait }),
        }
    }

    /// Returns how many jobs are admitted now.
    pub fn running(&self) -> usize {
        self.running - self.permits.available_permits()
    }

    /// Returns how many jobs wait now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// What a pool has done, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Hashing threads.
    pub threads: usize,
    /// Checks running now.
    pub running: usize,
    /// Checks waiting for a thread now.
    pub waiting: usize,
    /// Times a thread allocated (or grew) its argon2 buffer: at most one per thread with
    /// one parameter set.
    pub buffer_allocations: u64,
    /// Bytes of argon2 buffers the threads hold now.
    pub buffer_bytes: u64,
    /// Jobs the threads finished (skipped ones included).
    pub jobs_done: u64,
    /// Jobs skipped because their caller had gone (timed out or disconnected).
    pub jobs_skipped: u64,
}

#[derive(Default)]
struct Counters {
    buffer_allocations: AtomicU64,
    buffer_bytes: AtomicU64,
    jobs_done: AtomicU64,
    jobs_skipped: AtomicU64,
}

/// Hashes and checks passwords with argon2 on a fixed set of threads. Dropping the pool stops
/// its threads once they finish the jobs they hold.
pub struct PasswordPool {
    admission: Admission,
    jobs: SyncSender<Job>,
    threads: usize,
    params: Params,
    decoy: String,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for PasswordPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PasswordPool").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// One unit of work for a pool thread: runs with the thread's buffer and settings, counts
/// itself and sends its own answer. The admission place travels inside, so it is freed when
/// the thread is done with the job (just before the answer, so that a caller who has its
/// answer sees the place free), not when a caller stops waiting.
type Job = Box<dyn FnOnce(&mut Memory<'_>, &ThreadSettings) + Send>;

/// What a pool thread needs besides its jobs.
struct ThreadContext {
    jobs: Arc<Mutex<Receiver<Job>>>,
    settings: ThreadSettings,
    counters: Arc<Counters>,
}

/// What jobs read on a pool thread.
struct ThreadSettings {
    limits: CostLimits,
    /// Parameters of new hashes.
    params: Params,
}

/// The most a hash may cost.
#[derive(Clone, Copy)]
struct CostLimits {
    max_memory_kib: u32,
    max_iterations: u32,
}

impl PasswordPool {
    /// Starts `config.threads` (at least 1) hashing threads. Fails when a thread cannot be
    /// started or the parameters of new hashes exceed the pool's own limits.
    pub fn new(config: PoolConfig) -> Result<Self, PasswordError> {
        let threads = config.threads.max(1);
        let limits = CostLimits { max_memory_kib: config.max_memory_kib, max_iterations: config.max_iterations };
        check_cost(&config.params, limits)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(threads);
        let receiver = Arc::new(Mutex::new(receiver));
        let counters = Arc::new(Counters::default());
        for number in 0..threads {
            let context = ThreadContext {
                jobs: Arc::clone(&receiver),
                settings: ThreadSettings { limits, params: config.params.clone() },
                counters: Arc::clone(&counters),
            };
            std::thread::Builder::new()
                .name(format!("password-hash-{number}"))
                .spawn(move || run_thread(&context))
                .map_err(|error| PasswordError::Hashing(format!("cannot start a hashing thread: {error}")))?;
        }
        Ok(Self {
            admission: Admission::new(threads, config.queue, config.max_wait),
            jobs: sender,
            threads,
            decoy: decoy_hash(&config.params)?,
            params: config.params,
            counters,
        })
    }

    /// Checks `password` against the PHC string `hash`; with `None` (an unknown user), against
    /// a decoy with the pool's parameters, which never matches but costs the same, so that a
    /// caller cannot tell unknown user names by the time an answer takes.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, PasswordError> {
        let admitted = self.admit().await?;
        self.verify_admitted(admitted, password, hash).await
    }

    /// Waits for a place among the running checks, or refuses as busy (see
    /// [`Admission::admit`]). For callers with work of their own before the check (reading
    /// the stored hash) that should run within the same bound: pass the place on to
    /// [`PasswordPool::verify_admitted`].
    pub async fn admit(&self) -> Result<Admitted, PasswordError> {
        self.admission.admit().await
    }

    /// Like [`PasswordPool::verify`], in a place already taken with
    /// [`PasswordPool::admit`] (of this pool: a place of another is refused).
    pub async fn verify_admitted(
        &self,
        admitted: Admitted,
        password: &str,
        hash: Option<&str>,
    ) -> Result<bool, PasswordError> {
        if !Arc::ptr_eq(admitted.0.semaphore(), &self.admission.permits) {
            return Err(PasswordError::Hashing("the admission place is not this pool's".to_owned()));
        }
        let hash = hash.unwrap_or(&self.decoy).to_owned();
        let password = password.to_owned();
        self.submit(admitted, move |memory, settings| verify_with(memory, settings.limits, password.as_bytes(), &hash))
            .await
    }

    /// Returns a PHC argon2id string of `password` with a random salt and the pool's
    /// parameters.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let admitted = self.admit().await?;
        let password = password.to_owned();
        self.submit(admitted, move |memory, settings| hash_with(memory, &settings.params, password.as_bytes())).await
    }

    /// Returns the parameters of new hashes.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Returns what the pool holds and has done.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            threads: self.threads,
            running: self.admission.running(),
            waiting: self.admission.waiting(),
            buffer_allocations: self.counters.buffer_allocations.load(Ordering::Acquire),
            buffer_bytes: self.counters.buffer_bytes.load(Ordering::Acquire),
            jobs_done: self.counters.jobs_done.load(Ordering::Acquire),
            jobs_skipped: self.counters.jobs_skipped.load(Ordering::Acquire),
        }
    }

    /// Runs `work` on a pool thread in the place `admitted`, and returns its answer.
    async fn submit<T: Send + 'static>(
        &self,
        admitted: Admitted,
        work: impl FnOnce(&mut Memory<'_>, &ThreadSettings) -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory, settings| {
            if reply.is_closed() {
                // The caller timed out or went away: nobody would read the answer.
                drop(admitted);
                memory.counters.jobs_skipped.fetch_add(1, Ordering::AcqRel);
                memory.counters.jobs_done.fetch_add(1, Ordering::AcqRel);
                return;
            }
            let outcome = work(memory, settings);
            drop(admitted);
            memory.counters.jobs_done.fetch_add(1, Ordering::AcqRel);
            let _ = reply.send(outcome);
        });
        // Admitted jobs never outnumber the threads, and the channel holds that many.
        self.jobs.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => PasswordError::QueueFull { queued: self.threads },
            TrySendError::Disconnected(_) => PasswordError::Stopped,
        })?;
        answer.await.map_err(|_| PasswordError::Stopped)?
    }
}

/// A pool thread: takes jobs until the pool is dropped, reusing one buffer for all of them.
fn run_thread(context: &ThreadContext) {
    let mut blocks: Vec<Block> = Vec::new();
    loop {
        let job = context.jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        job(&mut Memory { blocks: &mut blocks, counters: &context.counters }, &context.settings);
    }
}

/// A thread's reusable argon2 buffer.
struct Memory<'a> {
    blocks: &'a mut Vec<Block>,
    counters: &'a Counters,
}

impl Memory<'_> {
    /// Returns `count` blocks of the buffer, allocating it only when it is smaller.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            let old_bytes = std::mem::size_of_val(self.blocks.as_slice()) as u64;
            // Free the old buffer first, so that growing never holds both.
            *self.blocks = Vec::new();
            *self.blocks = vec![Block::default(); count];
            let new_bytes = std::mem::size_of_val(self.blocks.as_slice()) as u64;
            self.counters.buffer_allocations.fetch_add(1, Ordering::AcqRel);
            self.counters.buffer_bytes.fetch_add(new_bytes - old_bytes, Ordering::AcqRel);
        }
        &mut self.blocks[..count]
    }
}

/// Holds a fresh buffer (one hash on the calling thread) with counters nobody reads.
fn one_off_memory<T>(work: impl FnOnce(&mut Memory<'_>) -> T) -> T {
    let counters = Counters::default();
    let mut blocks = Vec::new();
    work(&mut Memory { blocks: &mut blocks, counters: &counters })
}

fn unreadable(error: impl std::fmt::Display) -> PasswordError {
    PasswordError::UnreadableHash(error.to_string())
}

fn hashing(error: impl std::fmt::Display) -> PasswordError {
    PasswordError::Hashing(error.to_string())
}

/// Refuses parameters beyond the limits.
fn check_cost(params: &Params, limits: CostLimits) -> Result<(), PasswordError> {
    if params.m_cost() > limits.max_memory_kib || params.t_cost() > limits.max_iterations {
        return Err(PasswordError::TooCostly {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            max_memory_kib: limits.max_memory_kib,
            max_iterations: limits.max_iterations,
        });
    }
    Ok(())
}

/// Checks `password` against the PHC string `phc` with the algorithm, version and parameters
/// it names; compares in constant time.
fn verify_with(memory: &mut Memory<'_>, limits: CostLimits, password: &[u8], phc: &str) -> Result<bool, PasswordError> {
    let hash = PasswordHash::new(phc).map_err(unreadable)?;
    let algorithm = Algorithm::try_from(hash.algorithm).map_err(unreadable)?;
    // As the argon2 crate's own verifier: a hash without a version is checked as 0x13.
    let version = hash.version.map(Version::try_from).transpose().map_err(unreadable)?.unwrap_or_default();
    let params = Params::try_from(&hash).map_err(unreadable)?;
    check_cost(&params, limits)?;
    let expected = hash.hash.ok_or_else(|| unreadable("it has no hash output"))?;
    let salt = hash.salt.ok_or_else(|| unreadable("it has no salt"))?;
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut salt_bytes).map_err(unreadable)?;
    let blocks = memory.blocks(params.block_count());
    let argon2 = Argon2::new(algorithm, version, params);
    let actual = Output::init_with(expected.len(), |out| {
        argon2.hash_password_into_with_memory(password, salt, out, &mut *blocks).map_err(Into::into)
    })
    .map_err(hashing)?;
    // `Output` compares in constant time.
    Ok(actual == expected)
}

/// Returns a PHC argon2id string of `password` with a random salt and `params`.
fn hash_with(memory: &mut Memory<'_>, params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(hashing)?;
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let blocks = memory.blocks(params.block_count());
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt_bytes = [0u8; Salt::MAX_LENGTH];
    let salt_raw = salt.as_salt().decode_b64(&mut salt_bytes).map_err(hashing)?;
    let output = Output::init_with(output_len, |out| {
        argon2.hash_password_into_with_memory(password, salt_raw, out, &mut *blocks).map_err(Into::into)
    })
    .map_err(hashing)?;
    phc_string(params, salt.as_salt(), output)
}

fn phc_string(params: &Params, salt: Salt<'_>, output: Output) -> Result<String, PasswordError> {
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(hashing)?,
        salt: Some(salt),
        hash: Some(output),
    }
    .to_string())
}

/// Returns a PHC string with `params` that no password matches (its output is all zeros, not
/// the hash of anything anyone can find): checking it costs what checking a real hash does.
fn decoy_hash(params: &Params) -> Result<String, PasswordError> {
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::new(&vec![0u8; output_len]).map_err(hashing)?;
    phc_string(params, Salt::from_b64(DECOY_SALT).map_err(hashing)?, output)
}

/// Returns a PHC argon2id string of `password` with a random salt and `params`, computed on
/// the calling thread with a buffer of its own: for one-off hashes in command-line tools
/// (adding a user before a server starts). Servers hash through a [`PasswordPool`].
pub fn hash_password_here(password: &str, params: &Params) -> Result<String, PasswordError> {
    one_off_memory(|memory| hash_with(memory, params, password.as_bytes()))
}

#[cfg(test)]
mod tests;
