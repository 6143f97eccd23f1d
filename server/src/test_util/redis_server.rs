//! A private `redis-server` for tests: started on a free loopback port in a directory of its
//! own, with the durability the Redis store requires (`appendonly yes`, `appendfsync
//! always`, no RDB snapshots), and killed (by its process, never by name) when dropped.
//!
//! `redis-server` must be on the `PATH` (`scripts/test.sh` installs it where missing): a
//! Redis test fails rather than skips without it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a started server may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// Pause between two PINGs while waiting for the server (a poll interval, not a wait for
/// time to pass: the loop ends as soon as the server answers or the deadline passes).
const PING_INTERVAL: Duration = Duration::from_millis(10);

/// Ports tried before giving up: another process may take a free port between the moment
/// it is found and the moment the server binds it.
const START_ATTEMPTS: usize = 5;

/// A running `redis-server`, stopped and its directory removed when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a durable server (AOF, fsync on every write); panics (it is a test helper)
    /// when none can be started.
    pub fn start() -> Self {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts a server with `args` added to its command line (e.g. another fsync policy).
    pub fn start_with(args: &[&str]) -> Self {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(args) {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("cannot start redis-server (is it installed? scripts/test.sh installs it): {failures:?}");
    }

    fn try_start(args: &[&str]) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let mut server = Self { child, port, dir };
        server.wait_until_ready()?;
        Ok(server)
    }

    /// Waits until the server answers PING, it exits, or the deadline passes.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server on port {} exited: {status}", self.port));
            }
            let answered = client
                .get_connection_with_timeout(Duration::from_secs(1))
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            if answered.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("redis-server on port {} did not answer within {START_DEADLINE:?}", self.port));
            }
            std::thread::sleep(PING_INTERVAL);
        }
    }

    /// Returns the server's `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Returns the server's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Kills this child process only (by its pid), then reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Returns a loopback port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Returns a directory path no other server of this or another test process uses.
fn unique_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "syncline-redis-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// How long a new cluster may take until every node reports `cluster_state:ok`.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(20);

/// A Redis Cluster of private servers (primaries only), for tests of what runs on a cluster
/// (keys of one script in one slot). Its servers stop when it is dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` durable servers in cluster mode and joins them into one cluster
    /// with `redis-cli --cluster create`; panics (it is a test helper) when it cannot.
    pub fn start(primaries: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..primaries)
            .map(|_| {
                // The cluster bus port must be free too (the default, port + 10000, may not exist).
                let bus = free_port().expect("a free port for the cluster bus").to_string();
                RedisServer::start_with(&[
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ready();
        cluster
    }

    /// Waits until every node says the cluster is ok (every slot served).
    fn wait_until_ready(&self) {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        for node in &self.nodes {
            let client = redis::Client::open(node.url()).expect("node url");
            loop {
                let info = client
                    .get_connection_with_timeout(Duration::from_secs(1))
                    .and_then(|mut connection| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut connection));
                if info.is_ok_and(|info| info.contains("cluster_state:ok")) {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster is not ok within {CLUSTER_DEADLINE:?}");
                std::thread::sleep(PING_INTERVAL);
            }
        }
    }

    /// Returns the `redis://` URLs of the cluster's nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
