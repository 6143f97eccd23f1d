//! `syncline serve` as a child process (tests that kill it, or run the CLI beside it). Test
//! binaries pass the server binary's path (`env!("CARGO_BIN_EXE_syncline-under-test")`, which
//! only integration tests can name).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Warnings and errors of a server under test kept for a failing test to show (the last ones).
const KEPT_PROBLEMS: usize = 50;

/// A `syncline serve` child process on fixed loopback ports, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Its last warnings and errors, printed if the test fails while it runs.
    problems: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    pub device_url: String,
    pub grpc_url: String,
    /// The admin listener's base URL (on a free port of its own).
    pub admin_url: String,
}

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl ServerProcess {
    /// Starts the server and waits until its listeners are up (it logs them). A port of 0
    /// lets the server pick a free one; the URLs are read from its log either way, so no
    /// other process can take a port between choosing it and binding it.
    pub fn start(bin: &str, data_dir: &Path, device_port: u16, grpc_port: u16) -> Self {
        Self::start_with(bin, data_dir, device_port, grpc_port, None)
    }

    /// Starts the server, with a config file when given.
    pub fn start_with(bin: &str, data_dir: &Path, device_port: u16, grpc_port: u16, config: Option<&Path>) -> Self {
        let mut command = Command::new(bin);
        command.arg("serve");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .env("SYNCLINE_DATA_DIR", data_dir)
            .env("SYNCLINE_ADMIN_ADDR", "127.0.0.1:0")
            .env("SYNCLINE_DEVICE_ADDR", format!("127.0.0.1:{device_port}"))
            .env("SYNCLINE_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("SYNCLINE_DEMO_RECORDS", "100")
            .env("SYNCLINE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let (mut device_url, mut grpc_url, mut admin_url) = (None, None, None);
        let mut log = Vec::new();
        for line in lines.by_ref() {
            let line = line.expect("server log line");
            let url = logged_url(&line);
            if line.contains("device endpoint listening") {
                device_url = url;
            } else if line.contains("gRPC endpoint listening") {
                grpc_url = url;
            } else if line.contains("admin endpoint listening") {
                // The admin endpoint is the last listener to start.
                admin_url = url;
                break;
            }
            log.push(line);
        }
        let (Some(device_url), Some(grpc_url), Some(admin_url)) = (device_url, grpc_url, admin_url) else {
            let _ = child.wait();
            panic!("the server exited before listening; its log:\n{}", log.join("\n"));
        };
        // Keep draining the log so the child never blocks on a full pipe, keeping its problems.
        let problems = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let kept = problems.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#) {
                    let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if kept.len() == KEPT_PROBLEMS {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            }
        });
        Self { child, problems, device_url, grpc_url, admin_url }
    }

    /// The port the device endpoint listens on (to start the server again on it).
    pub fn device_port(&self) -> u16 {
        url_port(&self.device_url)
    }

    /// The port the gRPC endpoint listens on.
    pub fn grpc_port(&self) -> u16 {
        url_port(&self.grpc_url)
    }

    /// Returns the process id (for signals such as SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        // SIGKILL: no shutdown sequence, no flush beyond what each commit did.
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }

    pub fn stop(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for ServerProcess {
    /// A failing test unwinds past `stop`: the server process must not outlive it, and what
    /// it warned about is shown with the failure.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let problems = self.problems.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for line in problems.iter() {
                eprintln!("server {} (pid {}): {line}", self.device_url, self.child.id());
            }
        }
    }
}

/// Reads a server's JSON log (`SYNCLINE_LOG_FORMAT=json`) until its admin endpoint, the last
/// listener to start, listens; returns that endpoint's URL (`None`: the server exited first)
/// and keeps draining the log on a thread of its own, so the server never blocks on it.
pub fn admin_url_from_log(log: std::process::ChildStderr) -> Option<String> {
    let mut lines = BufReader::new(log).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("admin endpoint listening"))
        .and_then(|line| logged_url(&line));
    std::thread::spawn(move || for _ in lines {});
    url
}

/// The `url` field of a JSON log line, if it has one.
fn logged_url(line: &str) -> Option<String> {
    let line: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(line.pointer("/fields/url")?.as_str()?.to_owned())
}

/// The port of `scheme://host:port/path`.
fn url_port(url: &str) -> u16 {
    let authority = url.split("://").nth(1).and_then(|rest| rest.split('/').next()).expect("a URL with a host");
    authority.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a URL with a port")
}
