//! A fake identity provider for the unit tests: on 127.0.0.1, it answers every request with
//! `status` and `body` (both changeable while it runs) after a short delay, or never while
//! `hang` is set, and counts the requests. Dropped, it closes every connection.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// See the module documentation.
pub(super) struct FakeIdp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub status: Arc<AtomicU16>,
    pub hang: Arc<AtomicBool>,
    pub hits: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIdp {
    pub(super) async fn start(status: u16, body: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let status = Arc::new(AtomicU16::new(status));
        let hang = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(Mutex::new(body));
        let (st, hg, h, b) = (status.clone(), hang.clone(), hits.clone(), body.clone());
        let task = tokio::spawn(async move {
            // Dropped with the accept loop: aborting it closes every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (st, hg, h, b) = (st.clone(), hg.clone(), h.clone(), b.clone());
                connections.spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    if hg.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    // Long enough for concurrent requests to find the fetch running.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let body = b.lock().unwrap().clone();
                    let answer = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        st.load(Ordering::SeqCst),
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            base,
            status,
            hang,
            hits,
            body,
            task,
        }
    }

    /// The URL of `path` on this server.
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(super) fn set_body(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }
}
