//! `syncline serve` as a child process (tests that kill it, or run the CLI beside it). Test
//! binaries pass the server binary's path (`env!("CARGO_BIN_EXE_syncline-under-test")`, which
//! only integration tests can name).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `syncline serve` child process on fixed loopback ports, killed when dropped.
pub struct ServerProcess {
    child: Child,
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
    /// Starts the server and waits until its listeners are up (it logs them).
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
        let admin_port = free_port();
        let mut child = command
            .env("SYNCLINE_DATA_DIR", data_dir)
            .env("SYNCLINE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
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
        let mut up = false;
        for line in lines.by_ref() {
            let line = line.expect("server log line");
            // The admin endpoint is the last listener to start.
            if line.contains("admin endpoint listening") {
                up = true;
                break;
            }
        }
        assert!(up, "the server exited before listening");
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            device_url: format!("ws://127.0.0.1:{device_port}/v1/sync"),
            grpc_url: format!("http://127.0.0.1:{grpc_port}"),
            admin_url: format!("http://127.0.0.1:{admin_port}"),
        }
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
    /// A failing test unwinds past `stop`: the server process must not outlive it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
