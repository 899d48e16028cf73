//! A `redis-server` of the test's own (scripts/test.sh installs it), on a free loopback
//! port with a temporary directory; killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// How it persists: `--appendonly no` (nothing) unless started otherwise.
    persistence: Vec<&'static str>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server that persists nothing and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_with(&["--appendonly", "no"])
    }

    /// As [`RedisServer::start`], persisting as `persistence` says (e.g. `--appendonly yes`).
    pub fn start_with(persistence: &[&'static str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let child = Self::spawn(port, dir.path(), persistence);
        Self {
            child,
            port,
            persistence: persistence.to_vec(),
            dir,
        }
    }

    /// Kills the server (SIGKILL: no chance to save) and starts it again on the same port
    /// and directory: empty unless it persists with `appendonly`.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, self.dir.path(), &self.persistence);
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    fn spawn(port: u16, dir: &std::path::Path, persistence: &[&str]) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", ""])
            .args(persistence)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
