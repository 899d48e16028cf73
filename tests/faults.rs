//! authgate on an operator's bad day: out of file descriptors, signals while serving.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

/// CPU seconds (user + system) the process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn send_signal(authgate: &Authgate, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &authgate.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Issue 21 item 5: with the open-file limit reached, the accept loop waits for files to be
/// freed instead of spinning and logging each failure, and serves again once they are.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_files_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    // A hard limit of 64 open files, which authgate cannot raise.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" serve --config \"$1\"")
        .arg(BIN)
        .arg(&config);
    let authgate = Authgate::start_command(command, &config);
    let pid = authgate.child.id();
    let logs = authgate.log_text();
    assert!(logs.contains("\"open_files\":64"), "{logs}");

    // More idle connections than files: the server runs out.
    let held: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(authgate.data).unwrap())
        .collect();
    let out_of_files = eventually(Duration::from_secs(10), async || {
        authgate.log_text().contains("accept failed")
    })
    .await;
    assert!(out_of_files, "no accept failure logged");
    // Three seconds out of files: the loop pauses instead of spinning (it used 1.7 cores
    // and wrote a million log lines in two seconds), and logs at most once a second.
    let (cpu_before, lines_before) = (
        cpu_seconds(pid),
        authgate.log_text().matches("accept failed").count(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    let lines = authgate.log_text().matches("accept failed").count() - lines_before;
    assert!(cpu < 1.5, "{cpu} CPU seconds in 3 s out of files");
    assert!(lines <= 6, "{lines} accept failure lines in 3 s");
    let metrics = reqwest::get(authgate.admin_url("/metrics")).await;
    // The admin listener shares the limit; it may be out of files too.
    if let Ok(resp) = metrics {
        let text = resp.text().await.unwrap();
        assert!(text.contains("authgate_accept_errors_total"), "{text}");
    }

    // Files freed: decisions are answered again.
    drop(held);
    let http = reqwest::Client::new();
    let recovered = eventually(Duration::from_secs(30), async || {
        http.get(authgate.url("/auth"))
            .header("X-Original-URI", "/data")
            .header("X-Original-Method", "GET")
            .header("Host", "api.example.org")
            .send()
            .await
            .is_ok_and(|r| r.status() == 401)
    })
    .await;
    assert!(recovered, "no answer after the files were freed");
}

/// Issue 21 item 7: after SIGTERM, /readyz answers 503 for the drain delay while both
/// listeners keep serving; then the process exits 0. SIGHUP is logged and ignored.
#[tokio::test(flavor = "multi_thread")]
async fn drain_delay_and_hangup() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "server: { listen: \"127.0.0.1:0\", drain_delay: 4s, shutdown_timeout: 5s }\n",
    );
    let mut authgate = Authgate::start(&config);
    let http = reqwest::Client::new();
    let ready = http
        .get(authgate.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // SIGHUP: logged, ignored; still alive and ready.
    send_signal(&authgate, "-HUP");
    let logged = eventually(Duration::from_secs(10), async || {
        authgate.log_text().contains("SIGHUP ignored")
    })
    .await;
    assert!(logged, "{}", authgate.log_text());
    let ready = http
        .get(authgate.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // SIGTERM: /readyz says draining, decisions are still answered.
    send_signal(&authgate, "-TERM");
    let draining = eventually(Duration::from_secs(3), async || {
        http.get(authgate.admin_url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(draining, "/readyz did not turn 503");
    let body: serde_json::Value = http
        .get(authgate.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "draining");
    let decision = http
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/data")
        .header("X-Original-Method", "GET")
        .header("Host", "api.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(decision.status(), 401, "decisions go on during the delay");
    // The delay ends by itself (no second signal); the process exits 0.
    let mut status = None;
    let exited = eventually(Duration::from_secs(20), async || {
        status = authgate.child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    assert!(exited, "still running after the drain delay");
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    // The process has exited; its last lines may still be on their way through the pipe.
    let logged = eventually(Duration::from_secs(5), async || {
        authgate.log_text().contains("closing the listeners")
    })
    .await;
    assert!(logged, "{}", authgate.log_text());
}
