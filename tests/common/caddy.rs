//! A real Caddy (Debian's `caddy`, 2.6) running a deploy example such as
//! `deploy/caddy/Caddyfile`, pointed at a test authgate and upstream.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Path of the caddy binary, or a panic that names the install step.
pub fn caddy_binary() -> PathBuf {
    for candidate in ["/usr/bin/caddy", "/usr/local/bin/caddy"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("caddy is not installed: run scripts/test.sh, which installs the Debian package caddy");
}

/// The global options the tests add: no admin endpoint (no fixed port 2019), no automatic
/// HTTPS (no certificates, no redirect listener on :80), loopback only, state in `dir`.
fn test_options(dir: &Path) -> String {
    format!(
        "\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n\tstorage file_system {}\n",
        dir.join("data").display()
    )
}

/// `site` with the example's addresses replaced: authgate `127.0.0.1:8080`, the app
/// `127.0.0.1:3000`, every site on port 80 moved to `port`, and the test's global options
/// added (into the example's own global options block when it has one).
pub fn rewrite(
    site: &str,
    dir: &Path,
    authgate: SocketAddr,
    upstream: SocketAddr,
    port: u16,
) -> String {
    for placeholder in ["127.0.0.1:8080", "127.0.0.1:3000", ":80 {"] {
        assert!(
            site.contains(placeholder),
            "the Caddyfile has no {placeholder:?} to replace"
        );
    }
    let site = site
        .replace("127.0.0.1:8080", &authgate.to_string())
        .replace("127.0.0.1:3000", &upstream.to_string())
        .replace(":80 {", &format!(":{port} {{"));
    let options = test_options(dir);
    // A global options block can only be the first thing in a Caddyfile.
    let first = site
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    if first == Some("{") {
        let at = site.find("\n{\n").map(|i| i + 3).unwrap_or_else(|| {
            assert!(site.starts_with("{\n"), "unexpected global options block");
            2
        });
        format!("{}{options}{}", &site[..at], &site[at..])
    } else {
        format!("{{\n{options}}}\n\n{site}")
    }
}

/// A real Caddy running a Caddyfile from the repository.
pub struct Caddy {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Caddy {
    /// Runs `site_conf` (a path relative to the repository) with the addresses replaced, on
    /// a free loopback port; retries with another port when that one was taken meanwhile.
    pub fn start(dir: &Path, site_conf: &str, authgate: SocketAddr, upstream: SocketAddr) -> Self {
        Self::start_at(dir, site_conf, authgate, upstream, None)
    }

    /// As [`Caddy::start`], listening on `port` (chosen before authgate's config, which
    /// names the site's URL).
    pub fn start_on(
        dir: &Path,
        site_conf: &str,
        authgate: SocketAddr,
        upstream: SocketAddr,
        port: u16,
    ) -> Self {
        Self::start_at(dir, site_conf, authgate, upstream, Some(port))
    }

    fn start_at(
        dir: &Path,
        site_conf: &str,
        authgate: SocketAddr,
        upstream: SocketAddr,
        fixed_port: Option<u16>,
    ) -> Self {
        let caddy = caddy_binary();
        let dir = dir.join("caddy");
        for sub in ["home", "config", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let site =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(site_conf)).unwrap();
        let log_path = dir.join("caddy.log");
        for attempt in 0..5 {
            let port = fixed_port.unwrap_or_else(free_port);
            let conf_path = dir.join("Caddyfile");
            std::fs::write(&conf_path, rewrite(&site, &dir, authgate, upstream, port)).unwrap();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(&caddy)
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&conf_path)
                .env("HOME", dir.join("home"))
                .env("XDG_CONFIG_HOME", dir.join("config"))
                .env("XDG_DATA_HOME", dir.join("data"))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start caddy");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Self { child, addr, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "caddy attempt {attempt} failed:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        panic!("caddy did not start; see {}", log_path.display());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Caddy's own log (stderr), for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
