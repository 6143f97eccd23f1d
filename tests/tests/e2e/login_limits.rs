//! Issue 13: logins are bounded. A storm of concurrent logins beyond the limit is refused as
//! busy (RESOURCE_EXHAUSTED, close 4429) instead of piling up, whether a login channel or
//! local users check the passwords, and the login channel never sees more checks at once than
//! the limit; local checks keep their memory (one argon2 buffer per hashing thread); repeated
//! failures for one user name or from one address are refused without a check for a backoff.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use syncline_client_sim::{ConnectOptions, Connection, Incoming};
use syncline_proto::close_code;
use syncline_proto::sdk::{self, ChannelBackend, ChannelError, RecordStream, WriteOutcome};
use syncline_proto::v1::{
    AuthenticateRequest, AuthenticateResponse, ClientFrame, DescribeResponse, ErrorCode, Hello, Login, QueryRequest,
    ServerFrame, WriteRequest, client_frame, hello, server_frame,
};
use syncline_tests::{DEADLINE, TestServer, eventually};
use tokio::sync::Semaphore;

/// How the server answered a password login.
#[derive(Debug, PartialEq)]
enum Answer {
    Welcome,
    Refused { code: ErrorCode, close: u16, message: String },
}

impl Answer {
    fn code_and_close(&self) -> Option<(ErrorCode, u16)> {
        match self {
            Answer::Welcome => None,
            Answer::Refused { code, close, .. } => Some((*code, *close)),
        }
    }
}

const BUSY: Option<(ErrorCode, u16)> = Some((ErrorCode::ResourceExhausted, close_code::TOO_MANY_CONNECTIONS));
const WRONG: Option<(ErrorCode, u16)> = Some((ErrorCode::Unauthenticated, close_code::UNAUTHENTICATED));

/// Connects (from `from`, when given) and sends a password Hello.
async fn send_login(url: &str, from: Option<IpAddr>, user: &str, password: &str) -> Connection {
    let options = ConnectOptions { local_addr: from, ..ConnectOptions::default() };
    let mut connection = Connection::connect(url, &options).await.expect("connects");
    let hello = Hello {
        protocol_version: syncline_proto::PROTOCOL_VERSION,
        credentials: Some(hello::Credentials::Login(Login { username: user.into(), password: password.into() })),
        ..Hello::default()
    };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Hello(hello)) }).await.expect("sends Hello");
    connection
}

/// Reads the answer to a Hello: Welcome, or the fatal Error and the close after it.
async fn answer(mut connection: Connection) -> Answer {
    let mut error = None;
    loop {
        let incoming = tokio::time::timeout(DEADLINE, connection.recv()).await.expect("an answer in time");
        match incoming.expect("a frame or a close") {
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Welcome(_)) }) => return Answer::Welcome,
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Error(refusal)) }) => error = Some(refusal),
            Incoming::Frame(_) => {}
            Incoming::Closed { code, .. } => {
                let refusal = error.expect("an Error frame before the close");
                return Answer::Refused { code: refusal.code(), close: code, message: refusal.message };
            }
        }
    }
}

async fn log_in(url: &str, from: Option<IpAddr>, user: &str, password: &str) -> Answer {
    answer(send_login(url, from, user, password).await).await
}

/// A login channel whose Authenticate holds every call until released, counting the calls
/// in flight and the most at once; it refuses every password.
struct HeldLogins {
    release: Semaphore,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    calls: AtomicUsize,
}

impl Default for HeldLogins {
    fn default() -> Self {
        Self {
            release: Semaphore::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        }
    }
}

#[tonic::async_trait]
impl ChannelBackend for HeldLogins {
    async fn describe(&self) -> sdk::Result<DescribeResponse> {
        Ok(DescribeResponse::default())
    }

    async fn authenticate(&self, _request: AuthenticateRequest) -> sdk::Result<AuthenticateResponse> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let released = self.release.acquire().await.map(|permit| permit.forget());
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        released.map_err(|_| ChannelError::Unavailable("closed".into()))?;
        Ok(AuthenticateResponse { ok: false, message: "wrong password".into(), ..AuthenticateResponse::default() })
    }

    async fn query(&self, _request: QueryRequest) -> sdk::Result<RecordStream> {
        Err(ChannelError::Unimplemented("no sources".into()))
    }

    async fn create(&self, _request: WriteRequest) -> sdk::Result<WriteOutcome> {
        Err(ChannelError::Unimplemented("no sources".into()))
    }

    async fn update(&self, _request: WriteRequest) -> sdk::Result<WriteOutcome> {
        Err(ChannelError::Unimplemented("no sources".into()))
    }

    async fn delete(&self, _request: WriteRequest) -> sdk::Result<WriteOutcome> {
        Err(ChannelError::Unimplemented("no sources".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_beyond_the_limit_is_refused_as_busy_and_never_storms_the_login_channel() {
    const CONCURRENCY: usize = 2;
    const QUEUE: usize = 3;
    const BURST: usize = 12;
    let channel = Arc::new(HeldLogins::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(sdk::serve_shared(Arc::clone(&channel), listener, stop.clone().cancelled_owned()));
    let server = TestServer::start_with(move |config| {
        config.auth.channel = Some(url);
        config.auth.login_concurrency = CONCURRENCY;
        config.auth.login_queue = QUEUE;
        config.auth.login_queue_timeout_ms = syncline_server::config::MAX_LOGIN_QUEUE_TIMEOUT_MS;
        config.auth.max_failed_logins_per_user = 0;
        config.auth.max_failed_logins_per_address = 0;
    })
    .await;

    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for number in 0..BURST {
        let (url, answers) = (server.url(), answers.clone());
        tokio::spawn(async move {
            let answer = log_in(&url, None, &format!("user{number}"), "wrong").await;
            let _ = answers.send(answer);
        });
    }
    // While the channel holds its calls, the limit lets CONCURRENCY through and QUEUE wait,
    // and refuses the rest at once.
    for _ in 0..BURST - CONCURRENCY - QUEUE {
        let refused = tokio::time::timeout(DEADLINE, answered.recv()).await.expect("a refusal in time").unwrap();
        assert_eq!(refused.code_and_close(), BUSY, "{refused:?}");
        let Answer::Refused { message, .. } = refused else { unreachable!() };
        assert!(message.contains("retry"), "{message}");
    }
    eventually(DEADLINE, "the channel to hold the admitted calls", || async {
        (channel.in_flight.load(Ordering::SeqCst) == CONCURRENCY).then_some(())
    })
    .await;
    channel.release.add_permits(BURST);
    for _ in 0..CONCURRENCY + QUEUE {
        let checked = tokio::time::timeout(DEADLINE, answered.recv()).await.expect("an answer in time").unwrap();
        // UNAVAILABLE only if this machine was so slow that a held call outlived the server's
        // Authenticate deadline (15 s).
        let unavailable = Some((ErrorCode::Unavailable, close_code::INTERNAL));
        assert!(checked.code_and_close() == WRONG || checked.code_and_close() == unavailable, "{checked:?}");
    }
    assert_eq!(channel.calls.load(Ordering::SeqCst), CONCURRENCY + QUEUE, "refused logins never reach the channel");
    assert_eq!(channel.peak.load(Ordering::SeqCst), CONCURRENCY, "the channel never had more calls at once");
    server.stop().await;
    stop.cancel();
    let _ = serving.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_password_storms_are_bounded_and_keep_one_buffer_per_hashing_thread() {
    const THREADS: usize = 2;
    const BURST: usize = 24;
    let server = TestServer::start_with(|config| {
        config.auth.login_concurrency = THREADS;
        config.auth.login_queue = 4;
        config.auth.max_failed_logins_per_user = 0;
        config.auth.max_failed_logins_per_address = 0;
    })
    .await;
    server.add_user("ann", "ann-pw");
    let stats = || server.server.auth().password_pool_stats().expect("local password checks");
    for burst in 0..3 {
        let logins: Vec<_> = (0..BURST)
            .map(|number| {
                let url = server.url();
                // Known and unknown names, wrong passwords: each costs one argon2 check.
                let user = if number % 2 == 0 { "ann".to_owned() } else { format!("nobody{number}") };
                tokio::spawn(async move { log_in(&url, None, &user, "wrong").await })
            })
            .collect();
        let mut busy = 0;
        for login in logins {
            let answer = login.await.unwrap();
            match answer.code_and_close() {
                code if code == WRONG => {}
                code if code == BUSY => busy += 1,
                _ => panic!("burst {burst}: unexpected answer {answer:?}"),
            }
        }
        let stats = stats();
        assert_eq!((stats.threads, stats.running, stats.waiting), (THREADS, 0, 0), "burst {burst}: {stats:?}");
        assert!(stats.buffer_allocations <= THREADS as u64, "burst {burst}: buffers reused: {stats:?}");
        assert!(busy <= BURST - THREADS, "burst {burst}: the first logins are always checked");
    }
    // 19 MiB (argon2's default m_cost) per thread at most, however many logins came.
    assert!(stats().buffer_bytes <= THREADS as u64 * 19 * 1024 * 1024, "{:?}", stats());
    assert_eq!(log_in(&server.url(), None, "ann", "ann-pw").await, Answer::Welcome, "and it still logs in");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_block_the_user_name_and_the_address_without_a_check() {
    let server = TestServer::start_with(|config| {
        config.auth.max_failed_logins_per_user = 3;
        config.auth.max_failed_logins_per_address = 8;
    })
    .await;
    for user in ["ann", "bob", "cid"] {
        server.add_user(user, &format!("{user}-pw"));
    }
    let url = server.url();
    let checks_done = || server.server.auth().password_pool_stats().expect("local checks").jobs_done;

    // A success before the limit clears the user's count: 2 + 2 failures never block bob.
    for _ in 0..2 {
        for _ in 0..2 {
            assert_eq!(log_in(&url, None, "bob", "guess").await.code_and_close(), WRONG);
        }
        assert_eq!(log_in(&url, None, "bob", "bob-pw").await, Answer::Welcome);
    }

    // Three wrong passwords for ann are checked; after that even the right one is refused
    // without a check, from any address, saying when to retry.
    for _ in 0..3 {
        assert_eq!(log_in(&url, None, "ann", "guess").await.code_and_close(), WRONG);
    }
    let checks = checks_done();
    let other_address: IpAddr = "127.0.0.2".parse().unwrap();
    for (from, password) in [(None, "guess"), (None, "ann-pw"), (Some(other_address), "ann-pw")] {
        let refused = log_in(&url, from, "ann", password).await;
        let Answer::Refused { code, close, message } = refused else { panic!("ann was let in from {from:?}") };
        assert_eq!((code, close), (ErrorCode::ResourceExhausted, close_code::TOO_MANY_CONNECTIONS));
        // The backoff (60 s) less the time since the block began, rounded up.
        assert!(message.starts_with("too many failed logins for this user; retry in "), "{message}");
        assert!(message.ends_with(" s"), "{message}");
    }
    assert_eq!(checks_done(), checks, "blocked logins are refused without a password check");
    assert_eq!(log_in(&url, None, "cid", "cid-pw").await, Answer::Welcome, "other users log in");

    // 4 + 3 failures so far from 127.0.0.1 (refused ones do not count); one more blocks the
    // address for every user, while other addresses are served.
    assert_eq!(log_in(&url, None, "cid", "guess").await.code_and_close(), WRONG);
    let refused = log_in(&url, None, "cid", "cid-pw").await;
    assert_eq!(refused.code_and_close(), BUSY, "{refused:?}");
    let Answer::Refused { message, .. } = refused else { unreachable!() };
    assert!(message.starts_with("too many failed logins from this address; retry in"), "{message}");
    assert_eq!(log_in(&url, Some(other_address), "cid", "cid-pw").await, Answer::Welcome);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_guesses_for_one_user_gets_exactly_the_limit_of_checks() {
    const LIMIT: u32 = 3;
    const BURST: usize = 20;
    let server = TestServer::start_with(|config| {
        config.auth.login_concurrency = 2;
        config.auth.login_queue = BURST;
        config.auth.max_failed_logins_per_user = LIMIT;
        config.auth.max_failed_logins_per_address = 0;
    })
    .await;
    server.add_user("ann", "ann-pw");
    let guesses: Vec<_> = (0..BURST)
        .map(|number| {
            let url = server.url();
            tokio::spawn(async move { log_in(&url, None, "ann", &format!("guess-{number}")).await })
        })
        .collect();
    let (mut wrong, mut refused) = (0, 0);
    for guess in guesses {
        let answer = guess.await.unwrap();
        match answer.code_and_close() {
            code if code == WRONG => wrong += 1,
            code if code == BUSY => refused += 1,
            _ => panic!("unexpected answer {answer:?}"),
        }
    }
    // Checks running count against the limit: however many guesses arrive at once, no more
    // than the limit are checked before the name is blocked.
    assert_eq!((wrong, refused), (LIMIT as usize, BURST - LIMIT as usize));
    let Answer::Refused { message, .. } = log_in(&server.url(), None, "ann", "ann-pw").await else {
        panic!("ann is blocked")
    };
    assert!(message.starts_with("too many failed logins for this user; retry in "), "{message}");
    server.stop().await;
}
