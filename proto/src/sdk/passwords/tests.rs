use std::sync::atomic::AtomicUsize;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

use super::*;

/// The least memory argon2 allows (8 blocks of 1 KiB per lane): fast enough for many checks.
const SMALL_MEMORY_KIB: u32 = 64;

fn small_params(memory_kib: u32) -> Params {
    Params::new(memory_kib, 1, 1, None).expect("valid parameters")
}

fn pool(threads: usize, queue: usize, max_wait: Duration) -> PasswordPool {
    PasswordPool::new(PoolConfig {
        threads,
        queue,
        max_wait,
        params: small_params(SMALL_MEMORY_KIB),
        ..PoolConfig::default()
    })
    .expect("the pool starts")
}

/// Waits (yielding, without sleeping) until `condition` holds; fails after a generous deadline.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(std::time::Instant::now() < give_up, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

/// Occupies one pool thread until the returned sender is dropped or sent to.
fn hold_a_thread(pool: &Arc<PasswordPool>) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let pool = Arc::clone(pool);
    let held = tokio::spawn(async move {
        let admitted = pool.admit().await.expect("a place for the holding job");
        pool.submit(admitted, move |_, _| {
            let _ = released.recv();
            Ok(())
        })
        .await
        .expect("the holding job runs");
    });
    (release, held)
}

#[tokio::test]
async fn a_hash_verifies_with_its_password_only() {
    let pool = pool(1, 4, DEFAULT_MAX_WAIT);
    let hash = pool.hash("correct horse").await.unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
    assert!(pool.verify("correct horse", Some(&hash)).await.unwrap());
    assert!(!pool.verify("correct hors", Some(&hash)).await.unwrap());
    assert!(!pool.verify("", Some(&hash)).await.unwrap());
    let again = pool.hash("correct horse").await.unwrap();
    assert_ne!(hash, again, "each hash has its own salt");
}

#[tokio::test]
async fn hashes_are_interchangeable_with_the_argon2_crate() {
    let pool = pool(1, 4, DEFAULT_MAX_WAIT);
    // What stores hold today: the argon2 crate's default hash.
    let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
    let stored = Argon2::default().hash_password(b"ann-pw", &salt).unwrap().to_string();
    assert!(pool.verify("ann-pw", Some(&stored)).await.unwrap());
    assert!(!pool.verify("bob-pw", Some(&stored)).await.unwrap());
    // And the crate accepts the pool's hashes.
    let ours = hash_password_here("ann-pw", &Params::DEFAULT).unwrap();
    assert!(Argon2::default().verify_password(b"ann-pw", &PasswordHash::new(&ours).unwrap()).is_ok());
    assert!(Argon2::default().verify_password(b"bob-pw", &PasswordHash::new(&ours).unwrap()).is_err());
    assert!(pool.verify("ann-pw", Some(&ours)).await.unwrap());
}

#[tokio::test]
async fn an_unknown_user_is_checked_against_a_decoy_that_costs_the_same() {
    let pool = pool(1, 4, DEFAULT_MAX_WAIT);
    assert!(!pool.verify("anything", None).await.unwrap());
    assert!(!pool.verify("", None).await.unwrap());
    let stats = pool.stats();
    assert_eq!(stats.jobs_done, 2, "the decoy was hashed, not skipped");
    assert_eq!(stats.buffer_bytes, u64::from(SMALL_MEMORY_KIB) * 1024, "with the pool's parameters");
}

#[tokio::test]
async fn each_thread_allocates_its_buffer_once_and_reuses_it() {
    let pool = pool(1, 64, DEFAULT_MAX_WAIT);
    let hash = pool.hash("pw").await.unwrap();
    for _ in 0..20 {
        assert!(pool.verify("pw", Some(&hash)).await.unwrap());
        assert!(!pool.verify("wrong", Some(&hash)).await.unwrap());
    }
    let stats = pool.stats();
    assert_eq!(stats.buffer_allocations, 1);
    assert_eq!(stats.buffer_bytes, 64 * 1024);
    // A hash that needs more memory grows the buffer once; smaller ones reuse it.
    let bigger = hash_password_here("pw", &small_params(4 * SMALL_MEMORY_KIB)).unwrap();
    for _ in 0..5 {
        assert!(pool.verify("pw", Some(&bigger)).await.unwrap());
        assert!(pool.verify("pw", Some(&hash)).await.unwrap());
    }
    let stats = pool.stats();
    assert_eq!(stats.buffer_allocations, 2);
    assert_eq!(stats.buffer_bytes, 4 * 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_checks_run_at_once_than_there_are_threads() {
    let pool = Arc::new(pool(2, 100, Duration::from_secs(600)));
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let checks: Vec<_> = (0..24)
        .map(|_| {
            let (pool, active, peak) = (Arc::clone(&pool), Arc::clone(&active), Arc::clone(&peak));
            tokio::spawn(async move {
                let admitted = pool.admit().await?;
                pool.submit(admitted, move |memory, settings| {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let outcome = verify_with(memory, settings.limits, b"pw", &decoy_hash(&settings.params)?);
                    active.fetch_sub(1, Ordering::SeqCst);
                    outcome
                })
                .await
            })
        })
        .collect();
    for check in checks {
        assert_eq!(check.await.unwrap(), Ok(false));
    }
    assert!(peak.load(Ordering::SeqCst) <= 2, "peak {}", peak.load(Ordering::SeqCst));
    let stats = pool.stats();
    assert_eq!((stats.threads, stats.running, stats.waiting, stats.jobs_done), (2, 0, 0, 24));
    assert!(stats.buffer_allocations <= 2, "one buffer per thread at most: {stats:?}");
}

#[tokio::test]
async fn a_check_beyond_a_full_queue_is_refused_at_once() {
    let pool = Arc::new(pool(1, 1, Duration::from_secs(3600)));
    let (release, held) = hold_a_thread(&pool);
    until("the thread to be held", || pool.stats().running == 1).await;
    let waiting = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.verify("pw", None).await })
    };
    until("one check to wait", || pool.stats().waiting == 1).await;
    assert_eq!(pool.verify("pw", None).await, Err(PasswordError::QueueFull { queued: 1 }));
    assert!(PasswordError::QueueFull { queued: 1 }.is_busy());
    release.send(()).unwrap();
    held.await.unwrap();
    assert_eq!(waiting.await.unwrap(), Ok(false), "the waiting check ran once the thread was free");
}

#[tokio::test(start_paused = true)]
async fn a_check_that_waits_past_the_deadline_is_refused() {
    let max_wait = Duration::from_millis(250);
    let pool = Arc::new(pool(1, 8, max_wait));
    let (release, held) = hold_a_thread(&pool);
    until("the thread to be held", || pool.stats().running == 1).await;
    // The paused clock jumps to the deadline as soon as nothing else can run.
    let refused = pool.verify("pw", None).await;
    assert_eq!(refused, Err(PasswordError::WaitedTooLong { waited: max_wait }));
    assert!(refused.unwrap_err().is_busy());
    assert_eq!(pool.stats().waiting, 0, "the refused check left the queue");
    release.send(()).unwrap();
    held.await.unwrap();
    assert_eq!(pool.verify("pw", None).await, Ok(false), "the pool serves again");
}

#[tokio::test]
async fn unreadable_or_too_costly_hashes_are_typed_errors() {
    let pool = pool(1, 8, DEFAULT_MAX_WAIT);
    let output = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"; // 32 bytes
    let unreadable = [
        String::new(),
        "garbage".to_owned(),
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ".to_owned(),
        format!("$pbkdf2-sha256$i=1000$c2FsdHNhbHQ${output}"),
        format!("$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ${output}"),
        format!("$argon2id$v=7$m=64,t=1,p=1$c2FsdHNhbHQ${output}"),
        format!("$argon2id$v=19$m=64,t=1,p=1,x=1$c2FsdHNhbHQ${output}"),
        format!("$argon2id$v=19$m=lots,t=1,p=1$c2FsdHNhbHQ${output}"),
        format!("$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ${output}"),
        format!("$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ${output}"),
        format!("$argon2id$v=19$m=64,t=1,p=1$!!$${output}"),
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$AAAA".to_owned(),
    ];
    for hash in &unreadable {
        let outcome = pool.verify("pw", Some(hash)).await;
        assert!(matches!(outcome, Err(PasswordError::UnreadableHash(_))), "{hash:?}: {outcome:?}");
    }
    let costly = [
        format!("$argon2id$v=19$m={},t=1,p=1$c2FsdHNhbHQ${output}", DEFAULT_MAX_MEMORY_KIB + 1),
        format!("$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ${output}"),
        format!("$argon2id$v=19$m=64,t={},p=1$c2FsdHNhbHQ${output}", DEFAULT_MAX_ITERATIONS + 1),
    ];
    for hash in &costly {
        let outcome = pool.verify("pw", Some(hash)).await;
        assert!(matches!(outcome, Err(PasswordError::TooCostly { .. })), "{hash:?}: {outcome:?}");
    }
    assert_eq!(pool.stats().buffer_bytes, 0, "nothing was allocated for them");
    assert!(!pool.verify("pw", None).await.unwrap(), "the pool still works");
}

#[tokio::test]
async fn a_place_taken_first_covers_the_callers_own_work_and_the_check() {
    let checks = pool(1, 0, DEFAULT_MAX_WAIT);
    let hash = checks.hash("pw").await.unwrap();
    let admitted = checks.admit().await.unwrap();
    // The caller's own work (reading the stored hash) happens inside the bound: nobody else
    // gets a place meanwhile.
    assert_eq!(checks.stats().running, 1);
    assert_eq!(checks.verify("pw", Some(&hash)).await, Err(PasswordError::QueueFull { queued: 0 }));
    assert_eq!(checks.verify_admitted(admitted, "pw", Some(&hash)).await, Ok(true));
    assert_eq!(checks.stats().running, 0);
    let other = pool(1, 0, DEFAULT_MAX_WAIT);
    let foreign = other.admit().await.unwrap();
    assert!(matches!(checks.verify_admitted(foreign, "pw", Some(&hash)).await, Err(PasswordError::Hashing(_))));
}

#[test]
fn new_hashes_beyond_the_limits_are_refused_at_start() {
    let config = PoolConfig { params: small_params(DEFAULT_MAX_MEMORY_KIB * 2), ..PoolConfig::default() };
    assert!(matches!(PasswordPool::new(config), Err(PasswordError::TooCostly { .. })));
}

#[tokio::test(start_paused = true)]
async fn admission_serves_in_order_and_bounds_the_queue() {
    let admission = Arc::new(Admission::new(1, 2, Duration::from_secs(10)));
    let first = admission.admit().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let waiters: Vec<_> = (0..2)
        .map(|number| {
            let (admission, order) = (Arc::clone(&admission), Arc::clone(&order));
            tokio::spawn(async move {
                let admitted = admission.admit().await;
                order.lock().unwrap().push(number);
                admitted.map(drop)
            })
        })
        .collect();
    until("two waiters", || admission.waiting() == 2).await;
    assert!(matches!(admission.admit().await, Err(PasswordError::QueueFull { queued: 2 })));
    assert_eq!(admission.running(), 1);
    drop(first);
    for waiter in waiters {
        assert!(waiter.await.unwrap().is_ok());
    }
    assert_eq!(*order.lock().unwrap(), [0, 1]);
    assert_eq!((admission.running(), admission.waiting()), (0, 0));
}
